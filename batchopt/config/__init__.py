"""Pipeline configuration: one strict base (`strict`), the pipeline's sections and profiles
(`sections`, `pipeline`), the loader (`loader`: YAML, `${VAR}`, error text), the routing, compress
and self-hosted sections, and the self-hosted reference data. Imports only the leaves."""
