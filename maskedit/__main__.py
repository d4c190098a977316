"""`python -m maskedit ...`: see `maskedit.interfaces.cli.main`."""

from maskedit.interfaces.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
