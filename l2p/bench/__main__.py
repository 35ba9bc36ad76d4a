"""`python -m l2p.bench`: see `l2p.bench`."""

from .run import main

if __name__ == "__main__":
    main()
