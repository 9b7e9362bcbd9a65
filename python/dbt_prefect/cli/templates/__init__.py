"""What ``dbt-prefect init`` writes and ``dbt-prefect serve`` serves: the flow module
(``flow.py``, real code that is linted, type-checked and tested like the rest) and the
``prefect.yaml`` template (``prefect.yaml.j2``)."""
