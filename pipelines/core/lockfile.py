"""dvc.lock as a kiln run updates it: DVC's own writes, without parsing the file again
before each one."""

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def kept_parsed() -> Iterator[None]:
    """While active, DVC's update of a YAML file starts from the document it last wrote,
    when the file still holds exactly that text, instead of parsing the file again.

    DVC adds each stage's entry to dvc.lock by parsing the whole file with ruamel's
    round-trip parser, pure Python, before every stage: 0.22 s a parse of a full run's
    63 KB lock (py-spy: 5.6 s of a tiny full run, 1.4 s with this). The document it gets is
    the one it dumped, which nothing else holds, so the same file is written as before; a
    file changed in between (another process wrote it) is parsed as DVC would.
    """
    import io

    from dvc.utils.serialize import _yaml

    parse, dump = _yaml.parse_yaml_for_update, _yaml._dump
    last: dict = {}

    def parse_kept(text, path):
        # The same text parses to the same document, whichever file it was read from.
        if "data" in last and last["text"] == text:
            return last.pop("data")
        last.clear()
        return parse(text, path)

    def dump_kept(data, stream):
        buffer = io.StringIO()
        dump(data, buffer)
        text = buffer.getvalue()
        stream.write(text)
        last.update(text=text, data=data)

    _yaml.parse_yaml_for_update, _yaml._dump = parse_kept, dump_kept
    try:
        yield
    finally:
        _yaml.parse_yaml_for_update, _yaml._dump = parse, dump
