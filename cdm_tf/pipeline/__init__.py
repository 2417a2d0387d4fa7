"""The end-to-end job: its steps, their runner and the report of results."""
