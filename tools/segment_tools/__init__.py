"""Developer tooling, kept out of the product package: sample-data generators,
benchmarks and evaluation against planted truth. Nothing here ships in the
image or runs inside a DAG."""
