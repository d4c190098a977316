"""`python -m maskedit …`: the commands (main), the shared help layout (common), `plan` and `segment`/`caption`."""
