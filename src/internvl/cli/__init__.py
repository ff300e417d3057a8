"""The `internvl` command line: thin verbs over the library."""
