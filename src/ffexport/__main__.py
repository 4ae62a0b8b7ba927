from ffexport.cli.main import entry

entry()
