from occystrap.cli import entry

entry()
