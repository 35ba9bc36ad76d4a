"""`python -m l2p.app_overhead`, the command docs/benchmarks/app-overhead-cpu.md records: now
`python -m l2p.bench.app_overhead`, which this runs."""

from .bench.app_overhead import main

if __name__ == "__main__":
    main()
