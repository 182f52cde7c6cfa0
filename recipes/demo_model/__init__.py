"""The bundled demo model: data, training, evaluation and docs/RESULTS.md (`python -m recipes.demo_model`)."""
