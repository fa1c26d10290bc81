"""The bus: local broker lifecycle, topic declarations, client construction."""
