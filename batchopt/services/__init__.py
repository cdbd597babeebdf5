"""Services the stages share: embeddings (dedup and routing), the calibration of token counts
from past ledgers (the run), structured-output checks (execute and routing). Below the stages,
above the providers."""
