"""Services the stages share: embeddings (dedup and routing), token counting (prompts, run),
structured-output checks (execute, routing)."""
