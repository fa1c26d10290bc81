"""Quality rules: what makes an annotation, a sample or a snapshot acceptable."""
