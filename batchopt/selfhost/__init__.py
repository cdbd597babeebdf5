"""Self-hosted tiers: measured throughput (`batchopt bench-tier`), where a tier's throughput
comes from for the cost model, and the plan's quantisation what-if table.

    record.py      the bench record, kept under <cache>/<pipeline>/bench/<tier>.json
    throughput.py  which throughput a tier is costed at: recorded bench > stated in the YAML >
                   past ledger latencies > the built-in constants
    whatif.py      the plan's table over precisions for a tier with a self_hosted block
    bench.py       runs a sample of the pipeline's prompts through a tier and records it
"""
