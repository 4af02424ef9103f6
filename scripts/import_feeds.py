"""Import RSS and Atom feeds into Storywire (`make feeds`); the importer is the package importer/, its
documentation docs/importer.md.

    python scripts/import_feeds.py [--api URL] [--api-key KEY] [--state PATH]
                                   [--allow-private-addresses] FEED [FEED ...]
"""
import sys

from importer.cli import main

if __name__ == "__main__":
    sys.exit(main())
