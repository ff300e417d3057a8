"""Records, image transforms and tokenisation. Imports core only (never models)."""
