"""No models: burrow's tables are built by burrow's own migrations (``post_migrate``,
see apps.py). The module exists because Django sends ``post_migrate`` only to apps
that have one."""
