"""All Rich rendering of the CLI: the stages return typed results, the views draw them. Nothing else prints."""
