"""The feed importer: posts the items of RSS and Atom feeds to Storywire's batch API, remembering what it sent.

Run as ``python scripts/import_feeds.py FEED ...`` (``make feeds``); what it does for the user, flag by flag, is
in docs/importer.md. One job per module, in the order of a run:

    cli            the command line: flags, their checks, exit status
    run            one run: read every feed, post the new items oldest first, record them, report
    state          the state file: what was sent to each API, locked, written atomically
    fetch          a feed's bytes: a URL downloaded (through checked_http) or a local file
    checked_http   urllib that connects only to allowed addresses, within one deadline
    parse          bytes to a feedparser document, refusing what is not a complete feed
    read           one feed from location to items (fetch, parse, dates, articles)
    dates          each item's published_at, taken from its feed, never from this machine's clock
    articles       a feed entry to the article posted: source, url, title, body, language, key
    api            the API client: batches, retries by halving, one outcome per item
    errors, text   the exceptions, and the cleaning and shortening of text the others share
"""

# How the importer names itself to feed servers and to the API.
USER_AGENT = "Storywire-feed-importer/1"
