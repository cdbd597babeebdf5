"""Pipeline configuration: one strict base, the pipeline models, the loader, and the routing,
compress and self-hosted sections. Imports only the leaves."""
