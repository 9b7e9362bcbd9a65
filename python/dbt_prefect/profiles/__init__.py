"""profiles.yml templating: ``{{ prefect.blocks... }}`` and ``{{ prefect.variables... }}``.

- ``resolve``: the entry point. Reads profiles.yml, looks values up in Prefect and writes
  the temporary profile (``resolved_profiles``); re-exports the error types.
- ``rendering``: walks the parsed YAML tree, renders each placeholder, turns block values
  into secret env var references and dumps the rendered YAML.
- ``placeholders``: the placeholder syntax: finds placeholders, parses one, and defines the
  errors a placeholder can raise.
- ``resolver``: the lookup contract (``Resolver``), its not-found errors, and the caching
  wrapper the renderer reads through.
"""
