from anydepth_cli.cli import main

main()
