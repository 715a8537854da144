"""Backups of frozen volumes (docs/design.md rule 7 and section 5.1): a repository of
content-addressed chunks plus one manifest per backup.

``repository.py`` is the on-disk format (atomic writes, the chunk store, the config),
``manifest.py`` one backup's manifest, ``operations.py`` the commands the CLI runs:
backup, verify, restore, and the list of backups.
"""
