"""The user's data files, read and checked: CSV, TSV, JSON and JSON Lines, each checked with
the standard library first, which names the line of any problem, then read by `datasets`'
own loaders (userdata.py makes a task of what is read).

    table = read_file("reviews.csv")     # Table: {column: values}, and where each row is
    table.where(3)                       # "reviews.csv, line 5"

A file's format is its suffix:
  - .csv: comma-separated, a header row, RFC 4180 quoting: a field with a comma, a quote or
    a line break is written in double quotes, a quote inside it doubled: "a ""b"" c";
  - .tsv: tab-separated, a header row, no quoting (a quote is an ordinary character), as
    GLUE's files are;
  - .jsonl: JSON Lines, one object per line (blank lines are skipped);
  - .json: one JSON array of objects.
Files are UTF-8 (a byte-order mark is allowed). Every field of a CSV or TSV file is read as
text (no "NA" becomes missing, no "007" becomes 7); what a label is, is userdata.py's.

Each problem is a DataError naming the file and the line (a JSON file: the record): an
unsupported suffix, a missing or unreadable file, a binary file (a spreadsheet, an
archive), one that is empty or not UTF-8, a CSV quoting error, a row with more or fewer
fields than the header, a header with a nameless or repeated column, JSON that does not
parse or is not records, a column whose JSON values mix types.
"""

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import NamedTuple

from .tasks import DataError, utf8_text

FORMATS = {".csv": "CSV", ".tsv": "TSV", ".json": "JSON", ".jsonl": "JSON Lines"}
# the first bytes of files that are not text, and what they are
BINARY = {b"PK\x03\x04": "a ZIP archive (an Excel .xlsx file is one)", b"\x1f\x8b": "gzip-compressed",
          b"PAR1": "a Parquet file", b"\xd0\xcf\x11\xe0": "an old Office (.xls) file",
          b"%PDF": "a PDF", b"SQLite": "an SQLite database"}


class Table(NamedTuple):
    """One split as read: {column: values}, and where each row is (for messages)."""
    columns: dict             # column name -> list of values, in the source's order
    source: str               # a file's path, or "the train split"
    unit: str                 # "line", "record" or "row"
    places: list              # each row's line, record or row number

    def where(self, i):
        """Where row i is, for a message: "reviews.csv, line 5"."""
        return f"{self.source}, {self.unit} {self.places[i]}"


def read_bytes(path):
    """The bytes of a data file; a DataError naming it if it is missing, a directory, of an
    unsupported format or unreadable."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"{path}: unsupported format {path.suffix or '(no suffix)'!r}; give a "
                        f"CSV (.csv), TSV (.tsv), JSON (.json) or JSON Lines (.jsonl) file.")
    if not path.exists():
        raise DataError(f"{path} does not exist.")
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a {FORMATS[path.suffix.lower()]} file.")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror}).") from None


def decode(path, raw):
    """A data file's text: UTF-8 (a byte-order mark dropped), not empty, not a binary file."""
    for magic, what in BINARY.items():
        if raw.startswith(magic):
            raise DataError(f"{path} is {what}, not {FORMATS[path.suffix.lower()]} text; save the "
                            f"data as a .csv, .tsv, .json or .jsonl file.")
    text = utf8_text(path, raw)
    if not text.strip():
        raise DataError(f"{path} is empty; expected a header row and examples.")
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise DataError(f"{path}, line {line}: a NUL byte; this is not a text file.")
    return text


def read_file(path):
    """A data file as a Table: checked line by line (scan_delimited, scan_json_lines,
    scan_json), then read with `datasets`' loader (read_with_datasets)."""
    path = Path(path).expanduser()
    text = decode(path, read_bytes(path))
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        header, places = scan_delimited(path, text, "," if suffix == ".csv" else "\t")
        unit, records = "line", None
    else:
        scan = scan_json_lines if suffix == ".jsonl" else scan_json
        records, places = scan(path, text)
        header = list(dict.fromkeys(k for r in records for k in r))
        unit = "line" if suffix == ".jsonl" else "record"
    columns = read_with_datasets(path, header, records, places, unit)
    return Table(columns, str(path), unit, places)


QUOTING = ("a field in double quotes must end with a quote followed by a comma or the end of "
           "the line, and a quote inside it is doubled (\"a \"\"b\"\" c\")")


def scan_delimited(path, text, delimiter):
    """(header, the line each data row starts on) of a CSV (RFC 4180 quoting) or TSV (no
    quoting) file, every row checked to have the header's number of fields. Blank lines
    are skipped, as the loader skips them."""
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=True)
    header, places = None, []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if "end of data" in str(e):
                raise DataError(f"{path}, line {start}: the row starting on this line opens a quoted "
                                f"field that is never closed; {QUOTING}.") from None
            raise DataError(f"{path}, line {reader.line_num}: a quoting error ({e}); "
                            f"{QUOTING}.") from None
        if not row:
            continue
        if header is None:
            header = check_header(path, row, delimiter)
        elif len(row) != len(header):
            hint = ("a text holding a comma must be in double quotes" if delimiter == "," else
                    "a TSV file has no quoting, so a text cannot hold a tab")
            raise DataError(f"{path}, line {start}: {len(row)} field{'s' * (len(row) != 1)}, the "
                            f"header has {len(header)}; {hint}.")
        else:
            places.append(start)
    if not places:
        raise DataError(f"{path} has a header but no examples.")
    return header, places


def check_header(path, row, delimiter):
    """The header row: every column named, and once."""
    for i, name in enumerate(row, start=1):
        if not name.strip():
            raise DataError(f"{path}, line 1: column {i} of the header has no name (the header: "
                            f"{row}).")
    twice = sorted({n for n in row if row.count(n) > 1})
    if twice:
        raise DataError(f"{path}, line 1: the header names {twice} more than once.")
    if len(row) == 1 and delimiter == "," and "\t" in row[0]:
        raise DataError(f"{path}, line 1: the header holds tabs but no commas; is it a TSV file? "
                        f"Name it .tsv.")
    return row


def scan_json_lines(path, text):
    """(records, their line numbers) of a JSON Lines file: each non-blank line one object."""
    records, places = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {number}: not valid JSON ({e.msg}, column {e.colno}); a "
                            f"JSON Lines file holds one JSON object per line.") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: a JSON {json_type(record)}, not an object; a "
                            f"JSON Lines file holds one object per line.")
        records.append(record)
        places.append(number)
    if not records:
        raise DataError(f"{path} holds no records.")
    return records, places


def scan_json(path, text):
    """(records, their numbers from 1) of a JSON file: one array of objects."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        hint = (" (one object per line is JSON Lines: name the file .jsonl)"
                if e.msg == "Extra data" else "")
        raise DataError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON "
                        f"({e.msg}){hint}.") from None
    if not isinstance(value, list):
        raise DataError(f"{path} holds a JSON {json_type(value)}; a .json data file holds an array "
                        f"of records, [{{\"text\": ..., \"label\": ...}}, ...].")
    for i, record in enumerate(value, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{path}, record {i}: a JSON {json_type(record)}, not an object.")
    if not value:
        raise DataError(f"{path} holds an empty array: no records.")
    return value, list(range(1, len(value) + 1))


def json_type(value):
    """A JSON value's type in JSON's words (integers and fractions are both numbers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def mixed_column(path, records, places, unit):
    """The DataError for the first column whose records mix JSON types (null aside), or None."""
    first = {}
    for i, record in enumerate(records):
        for column, value in record.items():
            kind = json_type(value)
            if kind == "null":
                continue
            seen = first.setdefault(column, (kind, i))
            if seen[0] != kind:
                return DataError(f"{path}, {unit} {places[i]}: column {column!r} holds a {kind}, and "
                                 f"a {seen[0]} on {unit} {places[seen[1]]}: mixed types; make the "
                                 f"column's values all one type.")
    return None


def read_with_datasets(path, header, records, places, unit):
    """{column: values} read by `datasets`' csv or json loader (every CSV and TSV field as
    a string), into memory, with its cache in a temporary directory and its progress bars
    off while it runs. The number of rows must be the check's."""
    import datasets                     # (deferred: datasets takes ~1 s to import)
    suffix = path.suffix.lower()
    options = ({"features": datasets.Features({c: datasets.Value("string") for c in header}),
                "keep_default_na": False, "na_filter": False, "encoding": "utf-8-sig",
                "sep": "," if suffix == ".csv" else "\t",
                "quoting": csv.QUOTE_MINIMAL if suffix == ".csv" else csv.QUOTE_NONE}
               if suffix in (".csv", ".tsv") else {})
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="minicompacter-data-") as cache:
            loaded = datasets.load_dataset("csv" if suffix in (".csv", ".tsv") else "json",
                                           data_files=str(path), split="train", cache_dir=cache,
                                           keep_in_memory=True, **options)
            columns = {c: loaded[c][:] for c in loaded.column_names}     # in one batch
    except Exception as e:              # the loader's own failure, after the checks passed
        mixed = mixed_column(path, records, places, unit) if records is not None else None
        if mixed is not None:
            raise mixed from None
        raise DataError(f"{path}: datasets' {suffix[1:]} loader could not read it "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).") from None
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    rows = len(next(iter(columns.values()))) if columns else 0
    if rows != len(places):
        raise DataError(f"{path}: datasets read {rows} rows where the check found {len(places)}; "
                        f"the file's structure is ambiguous (check its quotes and line breaks).")
    return columns
