"""`python -m mlflow_copy copy-run …`: the same as the console scripts."""
from .cli import main

main()
