"""Asset group names, one per pipeline stage."""

INGESTION = "ingestion"
FEATURES = "features"
RETRIEVAL = "retrieval"
RANKING = "ranking"
EVALUATION = "evaluation"
REGISTRY = "registry"
MONITORING = "monitoring"
