"""Full model assemblies built from cvops.nn (one module per model)."""
