"""dvc.lock as a kiln run updates it: DVC's own writes, without parsing the file again
before each one."""

from collections.abc import Iterator
from contextlib import contextmanager

# Documents kept at once: dvc.lock's, and what DVC wrote since (a run-cache entry).
KEPT = 4


@contextmanager
def kept_parsed() -> Iterator[None]:
    """While active, DVC's update of a YAML file starts from the document it last wrote,
    when the file still holds exactly that text, instead of parsing the file again.

    DVC adds each stage's entry to dvc.lock by parsing the whole file with ruamel's
    round-trip parser, pure Python, before every stage: 0.22 s a parse of a full run's
    63 KB lock (py-spy: 5.6 s of a tiny full run, 1.4 s with this). The document it gets is
    the one it dumped, which nothing else holds, so the same file is written as before; a
    file changed in between (another process wrote it) is parsed as DVC would. The
    documents are kept by their text: DVC's run-cache writes its entry with the same dumper
    between two writes of dvc.lock (keeping only the last dump, a default run still parsed
    its lock 17 times, 4.8 s).
    """
    import io

    from dvc.utils.serialize import _yaml

    parse, dump = _yaml.parse_yaml_for_update, _yaml._dump
    dumped: dict[str, object] = {}  # the text of each recent dump, and its document

    def parse_kept(text, path):
        # The same text parses to the same document, whichever file it was read from; each
        # document is handed out once, since DVC changes the one it gets.
        if (data := dumped.pop(text, None)) is not None:
            return data
        return parse(text, path)

    def dump_kept(data, stream):
        buffer = io.StringIO()
        dump(data, buffer)
        text = buffer.getvalue()
        stream.write(text)
        dumped[text] = data
        while len(dumped) > KEPT:
            dumped.pop(next(iter(dumped)))

    _yaml.parse_yaml_for_update, _yaml._dump = parse_kept, dump_kept
    try:
        yield
    finally:
        _yaml.parse_yaml_for_update, _yaml._dump = parse, dump
