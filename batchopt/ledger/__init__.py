"""The cost ledger: prices, per-row costs and savings by lever, stored as Parquet with DuckDB views.

Imports only the leaves (`errors`, `records`, `hashing`): never another stage or a provider.
"""

from batchopt.ledger.ledger import FACT_SCHEMA, LEDGER_COLUMNS, LEVER_COLUMNS, price_ledger
from batchopt.ledger.pricing import ModelPrice, PriceTable, daily_cost
from batchopt.ledger.store import connect, query, write_ledger, write_views_file

__all__ = [
    "FACT_SCHEMA",
    "LEDGER_COLUMNS",
    "LEVER_COLUMNS",
    "ModelPrice",
    "PriceTable",
    "connect",
    "daily_cost",
    "price_ledger",
    "query",
    "write_ledger",
    "write_views_file",
]
