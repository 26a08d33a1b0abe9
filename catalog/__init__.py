"""Recovery points and the files inside them, searchable for granular restore."""
