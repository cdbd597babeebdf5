"""Distillation: the strong tier's good answers of past runs become a fine-tuning set
(`export`), a fine-tuning job makes a student model from it (`train`), and the student is
measured against the teacher on past rows before it is trusted as a tier (`evaluate`)."""
