"""A throwaway AIRFLOW_HOME for the Airflow tests, set before Airflow is first imported.

Every Airflow test module imports this first, so they share one home and one
SQLite database whichever is collected first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="poller-airflow-"))
atexit.register(shutil.rmtree, HOME, True)
os.environ["AIRFLOW_HOME"] = str(HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(HOME / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{HOME / 'airflow.db'}"
