"""Individual-level biomarkers: feature tables, pipelines, validation and safe model files."""
