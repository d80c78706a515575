"""hack/*.py: the project's scripts, tested as the modules they are (hack/ is on pytest's path)."""
