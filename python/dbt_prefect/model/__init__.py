"""What dbt-prefect knows about a dbt project, independent of how it runs.

One node record (``nodes``), one status vocabulary (``statuses``), and what is derived
from them: asset keys and properties (``assets``), tests as asset checks (``checks``),
warehouse metadata (``metadata``), log levels (``levels``), and the user's seam over
names and keys (``translator``).
"""
