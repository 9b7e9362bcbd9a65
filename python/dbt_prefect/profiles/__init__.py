"""profiles.yml templating: ``{{ prefect.blocks... }}`` and ``{{ prefect.variables... }}``.

``resolve`` reads the file, looks values up in Prefect and writes the temporary profile;
``rendering`` parses and renders placeholders; ``resolver`` is the lookup contract.
"""
