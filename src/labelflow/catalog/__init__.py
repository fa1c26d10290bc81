"""The catalog: current sample versions and their history (SQL), and the content-addressed
blob store that holds their artifacts."""
