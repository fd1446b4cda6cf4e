"""Image models of the workstation (anomaly detector, pathology classifier)."""
