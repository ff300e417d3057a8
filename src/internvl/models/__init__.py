"""nn.Modules and their configs. Imports core only (never data, evaluation, training or cli)."""
