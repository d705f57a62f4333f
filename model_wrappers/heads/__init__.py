"""Head sets: head-score files in the field's formats, and the selection of the heads a condition masks."""
