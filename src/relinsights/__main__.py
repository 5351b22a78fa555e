from relinsights.cli import main

if __name__ == "__main__":  # (not when multiprocessing imports it again in a spawned child)
    main()
