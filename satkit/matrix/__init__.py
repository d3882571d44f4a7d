"""The SAT formula, the SAT matrix built from transfer tables, its intervals, and square-matrix CSV files."""
