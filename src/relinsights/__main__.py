from relinsights.cli import main

main()
