"""Every string the Python runner and the dbt package's macros (dbt_packages_src/macros) must spell alike.

The macros cannot import Python, so each string here is also written out in a macro; the
comment names that macro. tests/test_package_contract.py checks that every one of them
still occurs in the macros. Plain strings only: this module imports nothing.
"""

# -- the package ------------------------------------------------------------------------
# Every macro: the package name, the namespace users call (`dbt_prefect.collect_metadata()`) and dispatch in.
PACKAGE_NAME = "dbt_prefect"
# prefect_settings: the var holding the project-wide switches (`--vars '{dbt_prefect: {...}}'`).
SETTINGS_VAR = "dbt_prefect"

# -- lines the macros log for the runner (debug level; forwarded whatever the log level) --
# collect_metadata, prefect_run_context: every line written for the runner starts with this.
RECORD_PREFIX = "dbt_prefect.record."
# collect_metadata: the marker before the JSON of one relation's metadata record.
METADATA_RECORD = "dbt_prefect.record.metadata "
# prefect_run_context: the question the runner answers synchronously, in RUN_CONTEXT_ENV.
RUN_CONTEXT_REQUEST = "dbt_prefect.record.run_context_request"

# -- environment variables the runner sets for the macros --------------------------------
# collect_metadata: queries the warehouse only when this is COLLECT_METADATA_ON (the runner emits assets).
COLLECT_METADATA_ENV = "DBT_PREFECT_COLLECT_METADATA"
# collect_metadata: the value of COLLECT_METADATA_ENV that turns it on.
COLLECT_METADATA_ON = "1"
# prefect_run_context: where the runner puts its JSON answer to RUN_CONTEXT_REQUEST.
RUN_CONTEXT_ENV = "DBT_PREFECT_RUN_CONTEXT"

# -- the keys of the metadata record (metadata_record writes them, the runner parses them) --
# metadata_record: the node the record is about.
RECORD_UNIQUE_ID = "unique_id"
# metadata_record: the relation's row count, when it was counted.
RECORD_ROW_COUNT = "row_count"
# metadata_record: the relation's columns, a list of {RECORD_COLUMN_NAME, RECORD_COLUMN_TYPE}.
RECORD_COLUMNS = "columns"
# metadata_record: a column's name.
RECORD_COLUMN_NAME = "name"
# metadata_record: a column's declared type, as relation_metadata_sql reads it.
RECORD_COLUMN_TYPE = "data_type"

# -- the keys of the run context answer (the runner writes them, the macros read them) ---
# run_history_rows: the build's flow run id.
CONTEXT_FLOW_RUN_ID = "flow_run_id"
# run_history_rows: {unique_id: {CONTEXT_TASK_RUN_ID, CONTEXT_ROW_COUNT}} for each node the runner saw.
CONTEXT_NODES = "nodes"
# run_history_rows: a node's task run id.
CONTEXT_TASK_RUN_ID = "task_run_id"
# run_history_rows: the row count collect_metadata recorded for a node (none if not counted).
CONTEXT_ROW_COUNT = "row_count"

# -- meta.prefect: a node's settings, resolved alike by prefect_config and the runner ----
# prefect_config: the key under source_meta, meta and config.meta that holds a node's settings.
META_KEY = "prefect"
# prefect_config_defaults, metadata_switches: the resource is a Prefect asset.
CONFIG_ENABLE_ASSETS = "enable_assets"
# prefect_config_defaults, metadata_switches: collect_metadata records the row count.
CONFIG_ROW_COUNT = "row_count"
# prefect_config_defaults, metadata_switches: views are counted too.
CONFIG_COUNT_VIEW_ROWS = "count_view_rows"
# prefect_config_defaults, metadata_switches: collect_metadata records the columns.
CONFIG_COLUMNS = "columns"
# The keys of prefect_config_defaults, in its order.
PREFECT_CONFIG_KEYS = (CONFIG_ENABLE_ASSETS, CONFIG_ROW_COUNT, CONFIG_COUNT_VIEW_ROWS, CONFIG_COLUMNS)

# -- markers read by tests and people, not by the runner ---------------------------------
# log_prefect_configs: the prefix of each `{unique_id, prefect}` JSON line it logs.
PREFECT_CONFIG_LINE = "dbt_prefect.prefect_config "
# relation_metadata_sql: opens every metadata query, so it can be found in dbt's logs.
METADATA_QUERY_MARKER = "/* dbt_prefect.relation_metadata */"

SHARED_WITH_MACROS = (
    PACKAGE_NAME,
    SETTINGS_VAR,
    RECORD_PREFIX,
    METADATA_RECORD,
    RUN_CONTEXT_REQUEST,
    COLLECT_METADATA_ENV,
    COLLECT_METADATA_ON,
    RUN_CONTEXT_ENV,
    RECORD_UNIQUE_ID,
    RECORD_ROW_COUNT,
    RECORD_COLUMNS,
    RECORD_COLUMN_NAME,
    RECORD_COLUMN_TYPE,
    CONTEXT_FLOW_RUN_ID,
    CONTEXT_NODES,
    CONTEXT_TASK_RUN_ID,
    CONTEXT_ROW_COUNT,
    META_KEY,
    *PREFECT_CONFIG_KEYS,
    PREFECT_CONFIG_LINE,
    METADATA_QUERY_MARKER,
)
