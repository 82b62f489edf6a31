#!/usr/bin/env python3
"""Writes the bad-input corpus: testdata/bad/files/* and testdata/bad/cases.toml.

The files and the table are generated together so that every expectation (above all
the physical line numbers of rejected lines) is computed from the very bytes written.
Edit the cases here and run `python3 testdata/bad/make_corpus.py`; the test
`tests/bad_inputs.rs` reads cases.toml and the files, never this script.
"""

import json
import pathlib
import shutil

HERE = pathlib.Path(__file__).resolve().parent
FILES = HERE / "files"
MIB = 1 << 20

REGION, KIND, DATE, SEQ = "SEV", "RMC", "20220730", "00000001"
NAME = f"DE_{REGION}_{KIND}_{DATE}_{SEQ}.DAT"
HDR = f"HDR,{KIND},{REGION},{DATE},{SEQ}".encode()

# Valid record lines: POR 13 fields, POS 16 fields.
POR_OK = b"POR,100,,C,42,Staff Nurse,DPN1,SEV,Y,RA7,1234,Org,Loc"
POS_OK = b"POS,200,,C,7,Nurse,N1,Ward,,DPN2,SEV,RA7,B5,XN05,Band 5,WK1"
POR_FIELDS = POR_OK.split(b",")
POS_FIELDS = POS_OK.split(b",")
assert len(POR_FIELDS) == 13 and len(POS_FIELDS) == 16


def por(*changes, pid=b"300"):
    """A POR line (key 300 unless told) with (field number, bytes) replaced."""
    fields = list(POR_FIELDS)
    fields[1] = pid
    for number, value in changes:
        fields[number - 1] = value
    return b",".join(fields)


def pos(*changes, pid=b"400"):
    """A POS line (key 400 unless told) with (field number, bytes) replaced."""
    fields = list(POS_FIELDS)
    fields[1] = pid
    for number, value in changes:
        fields[number - 1] = value
    return b",".join(fields)


def delete(rtype, pid, count):
    return b",".join([rtype, pid, b"", b"D"] + [b""] * (count - 4))


class Bad:
    """A record line that must be rejected with `reason` (a substring)."""

    def __init__(self, line, reason):
        self.line = line
        self.reason = reason


def build(parts, eol=b"\n"):
    """Joins lines, each followed by `eol`; returns (bytes, rejects with line numbers).

    A part that is raw bytes (type `Raw`) is inserted as is, without an end of line.
    """
    out = bytearray()
    rejects = []
    for part in parts:
        if isinstance(part, Raw):
            out += part.data
            continue
        if isinstance(part, Bad):
            rejects.append({"line": out.count(b"\n") + 1, "reason": part.reason})
            part = part.line
        out += part + eol
    return bytes(out), rejects


class Raw:
    def __init__(self, data):
        self.data = data


def trl(n):
    return b"TRL," + str(n).encode()


CASES = []
WRITTEN = {}


def case(id, what, expect, content=None, *, name=NAME, file=None, special=None, reason=None, rejects=None,
         applied=None):
    assert all(c["id"] != id for c in CASES), id
    entry = {"id": id, "what": what, "name": name}
    if special is None:
        if file is None:
            file = f"{id}.DAT"
            assert content is not None, id
            WRITTEN[file] = content
        else:
            assert content is None and file in WRITTEN, id
        entry["file"] = file
    else:
        assert content is None and file is None, id
        entry["special"] = special
    entry["expect"] = expect
    if reason is not None:
        entry["reason"] = reason
    if rejects is not None:
        entry["rejects"] = rejects
    if applied is not None:
        entry["applied"] = applied
    CASES.append(entry)


def rejected(id, what, bad_line, reason, **kw):
    """Header, a good POR, the bad line (line 3), a good POS, the trailer."""
    content, rejects = build([HDR, POR_OK, Bad(bad_line, reason), POS_OK, trl(3)])
    assert rejects == [{"line": 3, "reason": reason}]
    case(id, what, "rejects", content, rejects=rejects, applied=2, **kw)


def rejected_many(id, what, parts, applied, eol=b"\n"):
    content, rejects = build(parts, eol)
    assert rejects, id
    case(id, what, "rejects", content, rejects=rejects, applied=applied)


def quarantined(id, what, reason, content, **kw):
    case(id, what, "quarantined", content, reason=reason, **kw)


def applied(id, what, content, count, **kw):
    case(id, what, "applied", content, applied=count, **kw)


# ---------------------------------------------------------------------------
# Names. The content of every name case is the same valid SEV SEQ 1 file, so only the
# name decides.

VALID, _ = build([HDR, POR_OK, POS_OK, trl(2)])
WRITTEN["valid_SEV_RMC_20220730_00000001.DAT"] = VALID
V = "valid_SEV_RMC_20220730_00000001.DAT"


def bad_name(id, what, name):
    case(id, what, "bad_name", name=name, file=V, reason="bad name:")


bad_name("name-region-lowercase", "The region is lower case.", "DE_sev_RMC_20220730_00000001.DAT")
bad_name("name-region-2-letters", "The region has 2 letters.", "DE_SE_RMC_20220730_00000001.DAT")
bad_name("name-region-4-letters", "The region has 4 letters.", "DE_SEVX_RMC_20220730_00000001.DAT")
bad_name("name-region-digit", "The region holds a digit.", "DE_S3V_RMC_20220730_00000001.DAT")
bad_name("name-kind-rmx", "The kind is RMX, neither RMC nor RMF.", "DE_SEV_RMX_20220730_00000001.DAT")
bad_name("name-kind-lowercase", "The kind is lower case.", "DE_SEV_rmc_20220730_00000001.DAT")
bad_name("name-seq-7-digits", "The SEQ has 7 digits.", "DE_SEV_RMC_20220730_0000001.DAT")
bad_name("name-seq-9-digits", "The SEQ has 9 digits.", "DE_SEV_RMC_20220730_000000001.DAT")
bad_name("name-seq-zero", "The SEQ is 00000000 (it must be > 0).", "DE_SEV_RMC_20220730_00000000.DAT")
bad_name("name-seq-letter", "The SEQ holds a letter.", "DE_SEV_RMC_20220730_0000000A.DAT")
bad_name("name-seq-fullwidth-digits", "The SEQ is written in full-width digits (Unicode digits, not ASCII).",
         "DE_SEV_RMC_20220730_" + "\uff10" * 7 + "\uff11.DAT")
bad_name("name-date-feb-30", "The date is 30 February.", "DE_SEV_RMC_20220230_00000001.DAT")
bad_name("name-date-month-13", "The date has month 13.", "DE_SEV_RMC_20221301_00000001.DAT")
bad_name("name-date-day-32", "The date is 32 July.", "DE_SEV_RMC_20220732_00000001.DAT")
bad_name("name-date-feb-29-non-leap", "The date is 29 February of a non-leap year.",
         "DE_SEV_RMC_20230229_00000001.DAT")
bad_name("name-date-with-dashes", "The date is written YYYY-MM-DD.", "DE_SEV_RMC_2022-07-30_00000001.DAT")
bad_name("name-date-7-digits", "The date has 7 digits.", "DE_SEV_RMC_2022073_00000001.DAT")
bad_name("name-no-extension", "The .DAT extension is missing.", "DE_SEV_RMC_20220730_00000001")
bad_name("name-extension-lowercase", "The extension is .dat in lower case.", "DE_SEV_RMC_20220730_00000001.dat")
bad_name("name-extra-suffix-part", "An extra .part suffix follows .DAT.", "DE_SEV_RMC_20220730_00000001.DAT.part")
bad_name("name-extra-suffix-gz", "An extra .gz suffix follows .DAT.", "DE_SEV_RMC_20220730_00000001.DAT.gz")
bad_name("name-backup-tilde", "An editor backup: a ~ follows .DAT.", "DE_SEV_RMC_20220730_00000001.DAT~")
bad_name("name-space-inside", "A space replaces the underscore before the SEQ.", "DE_SEV_RMC_20220730 00000001.DAT")
bad_name("name-leading-space", "The name starts with a space.", " DE_SEV_RMC_20220730_00000001.DAT")
bad_name("name-trailing-space", "The name ends with a space.", "DE_SEV_RMC_20220730_00000001.DAT ")
bad_name("name-unicode-region", "The region holds a non-ASCII letter (É).", "DE_SÉV_RMC_20220730_00000001.DAT")
bad_name("name-cyrillic-homoglyph", "The E of DE is a Cyrillic Е (U+0415) that looks the same.",
         "D\u0415_SEV_RMC_20220730_00000001.DAT")
bad_name("name-extra-prefix", "Something comes before DE_.", "X_DE_SEV_RMC_20220730_00000001.DAT")
bad_name("name-double-underscore", "Two underscores between DE and the region.", "DE__SEV_RMC_20220730_00000001.DAT")
bad_name("name-doubled-extension", "The extension is .DAT.DAT.", "DE_SEV_RMC_20220730_00000001.DAT.DAT")
LONG = "DE_SEV_RMC_20220730_00000001_"
LONG = LONG + "X" * (255 - len(LONG) - len(".DAT")) + ".DAT"
assert len(LONG.encode()) == 255
bad_name("name-very-long", "A 255-byte name (the longest a file system allows) that starts like a batch file.", LONG)
bad_name("name-not-a-batch-file", "A stray notes file.", "notes.txt")
bad_name("name-bad-in-sub-folder", "A bad name (4-digit SEQ) below sub-folders: only its last segment is reported.",
         "incoming/2022/DE_SEV_RMC_20220730_0001.DAT")

case("ignored-leading-dot", "A name starting with a dot is an upload in progress.", "ignored",
     name=".DE_SEV_RMC_20220730_00000001.DAT", file=V)
PART, _ = build([HDR, POR_OK])
case("ignored-dot-part-upload", "A truncated upload in progress named .<name>.part.", "ignored", PART,
     name=".DE_SEV_RMC_20220730_00000001.DAT.part")
case("ignored-leading-dot-in-sub-folder", "A dot name below a sub-folder is still an upload in progress.", "ignored",
     name="incoming/.DE_SEV_RMC_20220730_00000001.DAT", file=V)
case("ignored-ds-store", "A hidden .DS_Store file left by a desktop.", "ignored", name=".DS_Store", file=V)
case("ignored-folder-key", "A folder key (ending in /) holding nothing.", "ignored", name="incoming/",
     special="directory")

case("name-in-sub-folders", "A valid name below sub-folders: only the last segment is the name.", "applied",
     name="incoming/2022/07/DE_SEV_RMC_20220730_00000001.DAT", file=V, applied=2)
case("name-in-dot-folder", "A valid name below a folder whose name starts with a dot (only the last segment counts).",
     "applied", name=".staging/DE_SEV_RMC_20220730_00000001.DAT", file=V, applied=2)
LONG_KEY = "/".join(["f" * 66] * 4) + "/" + NAME
assert len(LONG_KEY) == 300
case("name-long-key", f"A {len(LONG_KEY)}-character key: deep folders in front of a valid name.", "applied",
     name=LONG_KEY, file=V, applied=2)
applied("name-leap-day", "29 February of a leap year is a real date.",
        build([b"HDR,RMC,SEV,20240229,00000001", POR_OK, trl(1)])[0], 1, name="DE_SEV_RMC_20240229_00000001.DAT")
applied("name-max-seq", "The largest 8-digit SEQ, 99999999.",
        build([b"HDR,RMC,SEV,20220730,99999999", POR_OK, trl(1)])[0], 1, name="DE_SEV_RMC_20220730_99999999.DAT")
applied("name-kind-rmf", "A full file (RMF) with a matching header.",
        build([b"HDR,RMF,SEV,20220730,00000001", POR_OK, POS_OK, trl(2)])[0], 2,
        name="DE_SEV_RMF_20220730_00000001.DAT")

# ---------------------------------------------------------------------------
# Layout details that are fine.

BOM = b"\xef\xbb\xbf"
applied("ok-utf8-bom", "A UTF-8 BOM before the header is ignored.", BOM + VALID, 2)
applied("ok-crlf", "Every line ends in CRLF.", build([HDR, POR_OK, POS_OK, trl(2)], b"\r\n")[0], 2)
applied("ok-bom-and-crlf", "A BOM and CRLF line ends together.",
        BOM + build([HDR, POR_OK, POS_OK, trl(2)], b"\r\n")[0], 2)
applied("ok-mixed-line-ends", "LF and CRLF line ends mixed in one file.",
        HDR + b"\r\n" + POR_OK + b"\n" + POS_OK + b"\r\n" + trl(2) + b"\n", 2)
applied("ok-blank-lines-everywhere", "Blank lines before the header, between records and after the trailer.",
        build([b"", b"", HDR, b"", POR_OK, b"", b"", POS_OK, b"", trl(2), b"", b""])[0], 2)
applied("ok-blank-crlf-lines", "Blank lines that are a bare CRLF.",
        build([HDR, b"", POR_OK, b"", POS_OK, b"", trl(2)], b"\r\n")[0], 2)
applied("ok-thousands-of-blank-lines", "5000 blank lines between two records.",
        build([HDR, POR_OK, Raw(b"\n" * 5000), POS_OK, trl(2)])[0], 2)
applied("ok-blank-line-flood-1mib", "1 MiB of LF (1048576 blank lines) between two records.",
        build([HDR, POR_OK, Raw(b"\n" * MIB), POS_OK, trl(2)])[0], 2)
applied("ok-trailing-blank-lines", "Blank lines after the trailer.", VALID + b"\n" * 50, 2)
applied("ok-no-final-line-end", "The trailer is not followed by a line end.", VALID.rstrip(b"\n"), 2)
applied("ok-quoted-comma", "A quoted title holds a comma.", build([HDR, por((6, b'"Nurse, Band 5"')), trl(1)])[0], 1)
applied("ok-quoted-lf", "A quoted title holds a line feed: the record spans two lines.",
        build([HDR, por((6, b'"Staff\nNurse"')), POS_OK, trl(2)])[0], 2)
applied("ok-quoted-crlf", "A quoted title holds a CRLF in a CRLF file.",
        build([HDR, por((6, b'"Staff\r\nNurse"')), POS_OK, trl(2)], b"\r\n")[0], 2)
applied("ok-escaped-quotes", "Doubled quotes inside a quoted title.",
        build([HDR, por((6, b'"Say ""hi"" now"')), trl(1)])[0], 1)
applied("ok-all-fields-quoted", "Every field of a record is quoted, empty ones included.",
        build([HDR, b",".join(b'"' + f + b'"' for f in POR_FIELDS), trl(1)])[0], 1)
applied("ok-quoted-header", "Every field of the header and trailer is quoted.",
        build([b'"HDR","RMC","SEV","20220730","00000001"', POR_OK, b'"TRL","1"'])[0], 1)
applied("ok-lone-cr-inside-quotes", "A carriage return alone inside a quoted field is data, not a line end.",
        build([HDR, por((6, b'"Staff\rNurse"')), trl(1)])[0], 1)
applied("ok-quote-inside-unquoted-field", "A quote in the middle of an unquoted field is kept as text.",
        build([HDR, por((6, b'Staff "Nurse"')), trl(1)])[0], 1)
applied("ok-header-seq-unpadded", "The header SEQ 1 without zero padding matches the name's 00000001.",
        build([b"HDR,RMC,SEV,20220730,1", POR_OK, trl(1)])[0], 1)
applied("ok-header-seq-extra-zeros", "The header SEQ has 13 digits with leading zeros: equal as a number.",
        build([b"HDR,RMC,SEV,20220730,0000000000001", POR_OK, trl(1)])[0], 1)
applied("ok-trailer-count-zero-padded", "The trailer count 02 is the number 2.",
        build([HDR, POR_OK, POS_OK, b"TRL,02"])[0], 2)
applied("ok-delete-with-empty-fields", "D records of both types with every other field empty.",
        build([HDR, delete(b"POR", b"300", 13), delete(b"POS", b"400", 16), trl(2)])[0], 2)
applied("ok-delete-skips-other-checks", "A D record whose other fields would break their types on a C.",
        build([HDR, por((4, b"D"), (5, b"n/a"), (6, b"T" * 61), (11, b"xx")), trl(1)])[0], 1)
applied("ok-zero-records", "A header and TRL,0 with no records.", build([HDR, trl(0)])[0], 0)
applied("ok-position-id-15-digits", "A position_id of exactly 15 digits.",
        build([HDR, por(pid=b"123456789012345"), trl(1)])[0], 1)
applied("ok-position-id-leading-zeros", "A position_id with leading zeros is still 1-15 digits.",
        build([HDR, por(pid=b"000300"), trl(1)])[0], 1)
applied("ok-empty-optional-fields", "Optional fields (vpd_code, title, ...) left empty on a C record.",
        build([HDR, por((5, b""), (6, b""), (11, b""), (13, b"")), trl(1)])[0], 1)
applied("ok-x-counts-characters", "A 60-character title of 2-byte letters (120 bytes) fits X(60).",
        build([HDR, por((6, "é".encode() * 60)), trl(1)])[0], 1)
applied("ok-nul-in-text-field", "A NUL byte inside an X(n) text field is text.",
        build([HDR, por((6, b"Staff\x00Nurse")), trl(1)])[0], 1)
applied("ok-empty-quoted-line-after-trailer", "A line holding only \"\" after the trailer counts as blank.",
        build([HDR, POR_OK, trl(1), b'""'])[0], 1)
D_PREFIX = b",".join([b"POR", b"300", b"", b"D"] + [b""] * 8) + b","
ONE_MIB_LINE = D_PREFIX + b"x" * (MIB - len(D_PREFIX) - 1) + b"\n"
assert len(ONE_MIB_LINE) == MIB
applied("ok-record-of-exactly-1mib", "A D record whose line is exactly 1 MiB with its LF (not longer than the cap).",
        HDR + b"\n" + ONE_MIB_LINE + trl(1) + b"\n", 1)

# ---------------------------------------------------------------------------
# File-level faults: the whole file is quarantined.

case("empty-object", "The object has 0 bytes.", "quarantined", special="empty", reason="empty object")
quarantined("only-blank-lines", "The object holds nothing but blank lines.", "missing header", b"\n\n\n")
quarantined("only-a-bom", "The object holds only a UTF-8 BOM.", "missing header", BOM)
quarantined("no-header", "The first line is a record, not HDR.", "missing header", build([POR_OK, POS_OK, trl(2)])[0])
quarantined("header-tag-lowercase", "The header tag is hdr in lower case.", "missing header",
            build([b"hdr,RMC,SEV,20220730,00000001", POR_OK, trl(1)])[0])
quarantined("header-tag-with-space", "The header tag is followed by a space.", "missing header",
            build([b"HDR ,RMC,SEV,20220730,00000001", POR_OK, trl(1)])[0])
quarantined("double-bom", "Two UTF-8 BOMs: the second one is part of the first field.", "missing header",
            BOM + BOM + VALID)
UTF16_TEXT = VALID.decode()
quarantined("utf16le-with-bom", "The file is UTF-16 LE with a BOM (LF line ends).", "missing header",
            b"\xff\xfe" + UTF16_TEXT.encode("utf-16-le"))
quarantined("utf16be-with-bom", "The file is UTF-16 BE with a BOM (LF line ends).", "missing header",
            b"\xfe\xff" + UTF16_TEXT.encode("utf-16-be"))
quarantined("utf16le-without-bom", "The file is UTF-16 LE without a BOM (LF line ends).", "missing header",
            UTF16_TEXT.encode("utf-16-le"))
quarantined("utf16le-crlf", "A UTF-16 LE file with CRLF: its CR is followed by a NUL, so it is a lone CR.",
            "carriage return", b"\xff\xfe" + UTF16_TEXT.replace("\n", "\r\n").encode("utf-16-le"))

quarantined("header-4-fields", "The header lacks the SEQ.", "garbled header",
            build([b"HDR,RMC,SEV,20220730", POR_OK, trl(1)])[0])
quarantined("header-6-fields", "The header has an extra field.", "garbled header",
            build([b"HDR,RMC,SEV,20220730,00000001,X", POR_OK, trl(1)])[0])
quarantined("header-date-feb-30", "The header date is 30 February.", "garbled header",
            build([b"HDR,RMC,SEV,20220230,00000001", POR_OK, trl(1)])[0])
quarantined("header-date-with-dashes", "The header date is written 2022-07-30.", "garbled header",
            build([b"HDR,RMC,SEV,2022-07-30,00000001", POR_OK, trl(1)])[0])
quarantined("header-seq-letters", "The header SEQ is not numeric.", "garbled header",
            build([b"HDR,RMC,SEV,20220730,ONE", POR_OK, trl(1)])[0])
quarantined("header-seq-empty", "The header SEQ is empty.", "garbled header",
            build([b"HDR,RMC,SEV,20220730,", POR_OK, trl(1)])[0])
quarantined("header-seq-negative", "The header SEQ is -1.", "garbled header",
            build([b"HDR,RMC,SEV,20220730,-1", POR_OK, trl(1)])[0])
quarantined("header-seq-plus-sign", "The header SEQ is +1 (a sign is not a digit).", "garbled header",
            build([b"HDR,RMC,SEV,20220730,+1", POR_OK, trl(1)])[0])
quarantined("header-invalid-utf8", "The header region holds a Latin-1 byte.", "garbled header",
            build([b"HDR,RMC,S\xe9V,20220730,00000001", POR_OK, trl(1)])[0])

quarantined("header-kind-disagrees", "The header says RMF, the name RMC.", "header disagrees with the file name",
            build([b"HDR,RMF,SEV,20220730,00000001", POR_OK, trl(1)])[0])
quarantined("header-kind-lowercase", "The header kind is rmc in lower case.", "header disagrees with the file name",
            build([b"HDR,rmc,SEV,20220730,00000001", POR_OK, trl(1)])[0])
quarantined("header-region-disagrees", "The header says WES, the name SEV.", "header disagrees with the file name",
            build([b"HDR,RMC,WES,20220730,00000001", POR_OK, trl(1)])[0])
quarantined("header-date-disagrees", "The header date is a day later than the name's.",
            "header disagrees with the file name", build([b"HDR,RMC,SEV,20220731,00000001", POR_OK, trl(1)])[0])
quarantined("header-seq-disagrees", "The header SEQ is 2, the name's 1.", "header disagrees with the file name",
            build([b"HDR,RMC,SEV,20220730,00000002", POR_OK, trl(1)])[0])

quarantined("no-trailer", "The file ends after its records without TRL.", "missing trailer",
            build([HDR, POR_OK, POS_OK])[0])
quarantined("header-only", "The file is only a header.", "missing trailer", build([HDR])[0])
quarantined("trailer-tag-lowercase", "The trailer tag is trl in lower case, so the file has no trailer.",
            "missing trailer", build([HDR, POR_OK, b"trl,1"])[0])
quarantined("trailer-count-too-high", "TRL,2 for one record line.", "trailer count", build([HDR, POR_OK, trl(2)])[0])
quarantined("trailer-count-too-low", "TRL,0 for one record line.", "trailer count", build([HDR, POR_OK, trl(0)])[0])
quarantined("trailer-count-omits-rejected-line", "TRL,1 counts only the good line, but rejected lines count too.",
            "trailer count", build([HDR, POR_OK, por((4, b"X")), trl(1)])[0])
quarantined("trailer-count-includes-blank-lines", "TRL,3 counts two blank lines as records.", "trailer count",
            build([HDR, POR_OK, b"", b"", trl(3)])[0])
quarantined("trailer-count-letters", "The trailer count is not numeric.", "garbled trailer",
            build([HDR, POR_OK, b"TRL,one"])[0])
quarantined("trailer-3-fields", "The trailer has an extra field.", "garbled trailer",
            build([HDR, POR_OK, b"TRL,1,2"])[0])
quarantined("trailer-1-field", "The trailer has no count field.", "garbled trailer", build([HDR, POR_OK, b"TRL"])[0])
quarantined("trailer-count-empty", "The trailer count is empty.", "garbled trailer", build([HDR, POR_OK, b"TRL,"])[0])
quarantined("trailer-count-plus-sign", "The trailer count is +1.", "garbled trailer",
            build([HDR, POR_OK, b"TRL,+1"])[0])
quarantined("trailer-count-negative", "The trailer count is -1.", "garbled trailer", build([HDR, POR_OK, b"TRL,-1"])[0])
quarantined("trailer-count-with-space", "The trailer count has a leading space.", "garbled trailer",
            build([HDR, POR_OK, b"TRL, 1"])[0])
quarantined("trailer-count-invalid-utf8", "The trailer count is a byte that is not UTF-8.", "garbled trailer",
            build([HDR, POR_OK, b"TRL,\xff"])[0])

quarantined("record-after-trailer", "A record follows the trailer.", "content after the trailer",
            build([HDR, POR_OK, trl(1), POS_OK])[0])
quarantined("two-trailers", "The trailer appears twice.", "content after the trailer",
            build([HDR, POR_OK, trl(1), trl(1)])[0])
quarantined("spaces-after-trailer", "A line of spaces (not blank) follows the trailer.", "content after the trailer",
            build([HDR, POR_OK, trl(1), b"   "])[0])
quarantined("second-file-after-trailer", "A second header and records follow the trailer (two files glued).",
            "content after the trailer", build([HDR, POR_OK, trl(1), HDR, POS_OK, trl(1)])[0])

quarantined("record-longer-than-1mib", "One unquoted field makes a record of more than 1 MiB.", "longer than",
            build([HDR, POR_OK, por((13, b"x" * (MIB + 1))), trl(2)])[0])
quarantined("quoted-record-longer-than-1mib", "A quoted field spanning 1100 lines makes a record of more than 1 MiB.",
            "longer than", build([HDR, por((13, b'"' + (b"y" * 999 + b"\n") * 1100 + b'"')), trl(1)])[0])

quarantined("lone-cr-inside-a-field", "A lone CR in the middle of an unquoted title.", "carriage return",
            build([HDR, por((6, b"Staff\rNurse")), trl(1)])[0])
quarantined("cr-only-line-ends", "Old Mac line ends: CR without LF everywhere.", "carriage return",
            build([HDR, POR_OK, POS_OK, trl(2)], b"\r")[0])
quarantined("cr-cr-lf", "A line ends in CR CR LF.", "carriage return",
            HDR + b"\n" + POR_OK + b"\r\r\n" + trl(1) + b"\n")
quarantined("cr-at-end-of-file", "The last byte of the file is a lone CR after the trailer.", "carriage return",
            HDR + b"\n" + POR_OK + b"\n" + trl(1) + b"\r")
quarantined("lone-cr-in-header", "A lone CR inside the header line.", "carriage return",
            build([b"HDR,RMC\r,SEV,20220730,00000001", POR_OK, trl(1)])[0])
quarantined("lone-cr-at-line-start", "A lone CR at the start of a line, right after an LF.", "carriage return",
            build([HDR, POR_OK, Raw(b"\r"), trl(1)])[0])

quarantined("quote-never-closed", "A quoted title opens and is never closed before the end of the file.",
            "never closed", build([HDR, por((6, b'"Staff Nurse')), POS_OK, trl(2)])[0])
quarantined("quote-never-closed-in-header", "A quoted header field is never closed.", "never closed",
            build([b'HDR,"RMC,SEV,20220730,00000001', POR_OK, trl(1)])[0])
quarantined("quote-never-closed-in-trailer", "The trailer count opens a quote that is never closed.", "never closed",
            build([HDR, POR_OK, b'TRL,"1'])[0])

# ---------------------------------------------------------------------------
# Line-level faults: one line rejected, the others applied.

rejected("type-unknown", "The record type is XYZ.", por((1, b"XYZ")), "unknown record type")
rejected("type-lowercase", "The record type is por in lower case.", por((1, b"por")), "unknown record type")
rejected("type-trailing-space", "The record type is 'POR ' with a space.", por((1, b"POR ")), "unknown record type")
rejected("type-empty", "The record type is empty.", por((1, b"")), "unknown record type")
rejected("line-of-spaces", "A line of spaces is not blank: its type is unknown.", b"   ", "unknown record type")
rejected("header-repeated-in-body", "A second header line in the body is a record of unknown type HDR.", HDR,
         "unknown record type")
rejected("bom-before-a-record", "A BOM at the start of a record line makes its type unknown.", BOM + por(),
         "unknown record type")
rejected("por-12-fields", "A POR line with 12 fields.", b",".join(por().split(b",")[:12]), "wrong field count")
rejected("por-14-fields-trailing-comma", "A POR line with a trailing comma (14 fields).", por() + b",",
         "wrong field count")
rejected("pos-15-fields", "A POS line with 15 fields.", b",".join(pos().split(b",")[:15]), "wrong field count")
rejected("pos-17-fields", "A POS line with 17 fields.", pos() + b",extra", "wrong field count")
rejected("pos-with-por-fields", "A POS type on a 13-field POR layout.", por((1, b"POS")), "wrong field count")
rejected("exactly-4096-fields", "A POR line with 4096 fields (the most kept).",
         por() + b",x" * (4096 - 13), "wrong field count")
rejected("more-than-4096-fields", "A POR line with 5000 fields.", por() + b",x" * (5000 - 13), "more than 4096 fields")
rejected("position-id-empty", "The position_id is empty.", por(pid=b""), "required")
rejected("position-id-letters", "The position_id holds a letter.", por(pid=b"30A"), "field 2")
rejected("position-id-16-digits", "The position_id has 16 digits (N(15)).", por(pid=b"1234567890123456"), "field 2")
rejected("position-id-negative", "The position_id is -300.", por(pid=b"-300"), "field 2")
rejected("position-id-space", "The position_id has a leading space.", por(pid=b" 300"), "field 2")
rejected("position-id-fullwidth-digits", "The position_id is written in full-width digits.",
         por(pid="３００".encode()), "field 2")
rejected("position-id-nul", "A NUL byte inside the position_id.", por(pid=b"3\x0000"), "field 2")
rejected("delete-with-bad-position-id", "A D record still checks its position_id.",
         delete(b"POR", b"abc", 13), "field 2")
rejected("indicator-x", "The indicator is X.", por((4, b"X")), "bad indicator")
rejected("indicator-lowercase", "The indicator is c in lower case.", por((4, b"c")), "bad indicator")
rejected("indicator-two-letters", "The indicator is CD.", pos((4, b"CD")), "bad indicator")
rejected("indicator-empty", "The indicator is empty.", por((4, b"")), "bad indicator")
rejected("title-61-characters", "The POR position_title X(60) has 61 characters.", por((6, b"T" * 61)), "field 6")
rejected("title-61-multibyte-characters", "A title of 61 two-byte letters.", por((6, "é".encode() * 61)), "field 6")
rejected("por-managing-deanery-too-long", "POR managing_deanery X(10) has 11 characters.", por((8, b"ABCDEFGHIJK")),
         "field 8")
rejected("por-organisation-241", "POR esr_organisation X(240) has 241 characters.", por((12, b"O" * 241)), "field 12")
rejected("pos-occupation-code-too-long", "POS occupation_code X(5) has 6 characters.", pos((7, b"ABCDEF")), "field 7")
rejected("pos-grade-trust-too-long", "POS grade_trust X(3) has 4 characters.", pos((13, b"ST12")), "field 13")
rejected("vpd-code-3-digits", "vpd_code L(4) has 3 digits.", por((11, b"123")), "field 11")
rejected("vpd-code-5-digits", "vpd_code L(4) has 5 digits.", por((11, b"12345")), "field 11")
rejected("vpd-code-letter", "vpd_code L(4) holds a letter.", por((11, b"12a4")), "field 11")
rejected("position-number-letter", "position_number N(10) holds a letter.", por((5, b"10x1")), "field 5")
rejected("position-number-11-digits", "position_number N(10) has 11 digits.", pos((5, b"12345678901")), "field 5")
rejected("utf8-latin1-byte", "A Latin-1 é (0xE9) in the title.", por((6, b"Caf\xe9")), "UTF-8")
rejected("utf8-overlong", "An overlong encoding of / (C0 AF) in the title.", por((6, b"a\xc0\xafb")), "UTF-8")
rejected("utf8-surrogate", "An encoded UTF-16 surrogate (ED A0 80) in the title.", por((6, b"a\xed\xa0\x80b")),
         "UTF-8")
rejected("utf8-truncated-at-line-end", "The last field ends in half of a 3-byte character.",
         por((13, b"Loc\xe2\x82")), "UTF-8")
rejected("utf8-in-delete-record", "Invalid UTF-8 in an unchecked field of a D record still rejects the line.",
         por((4, b"D"), (6, b"Caf\xe9")), "UTF-8")
rejected("text-after-closing-quote", "Text follows the closing quote of the title.", por((6, b'"ab"c')),
         "closing quote")
rejected("space-after-closing-quote", "A space follows the closing quote of the title.", por((6, b'"ab" ')),
         "closing quote")
rejected("text-after-quoted-position-id", "Text follows the closing quote of the position_id.",
         por(pid=b'"300"x'), "closing quote")

rejected_many("latin1-file", "A file in Latin-1: both records hold an é and are rejected.",
              [HDR, Bad(por((6, b"Caf\xe9"), pid=b"100"), "UTF-8"), Bad(pos((6, b"Caf\xe9"), pid=b"200"), "UTF-8"),
               trl(2)], 0)
rejected_many("many-bad-lines", "Three different line faults among three good lines, with a blank line.",
              [HDR, POR_OK, Bad(por((1, b"XYZ")), "unknown record type"), b"", POS_OK,
               Bad(por((4, b"X"), pid=b"301"), "bad indicator"),
               Bad(b",".join(por(pid=b"302").split(b",")[:12]), "wrong field count"), pos(pid=b"201"), trl(6)], 3)
rejected_many("line-numbers-count-blank-lines", "Blank lines before the bad line count in its line number.",
              [HDR, b"", b"", POR_OK, b"", Bad(por((4, b"X")), "bad indicator"), POS_OK, trl(3)], 2)
rejected_many("line-numbers-after-5000-blank-lines", "5000 blank lines before the bad line count.",
              [HDR, POR_OK, Raw(b"\n" * 5000), Bad(por((4, b"X")), "bad indicator"), POS_OK, trl(3)], 2)
rejected_many("line-numbers-after-quoted-lf", "A record spanning 3 lines (quoted LFs) moves the next line number.",
              [HDR, por((6, b'"a\nb\nc"'), pid=b"100"), Bad(por((4, b"X")), "bad indicator"), POS_OK, trl(3)], 2)
rejected_many("line-numbers-after-quoted-crlf", "A record spanning 2 lines (a quoted CRLF) in a CRLF file.",
              [HDR, por((6, b'"a\r\nb"'), pid=b"100"), Bad(por((4, b"X")), "bad indicator"), POS_OK, trl(3)],
              2, eol=b"\r\n")
rejected_many("multi-line-bad-record", "A bad record spanning lines is reported on the line where it starts.",
              [HDR, POR_OK, b"", Bad(por((4, b"X"), (6, b'"one\ntwo\nthree"')), "bad indicator"), POS_OK, trl(3)], 2)
rejected_many("crlf-file-bad-line", "A CRLF file with a bad indicator on line 3.",
              [HDR, POR_OK, Bad(por((4, b"X")), "bad indicator"), POS_OK, trl(3)], 2, eol=b"\r\n")
rejected_many("bom-file-bad-line", "A BOM file: the BOM does not shift line numbers.",
              [Raw(BOM), HDR, POR_OK, Bad(por((11, b"123")), "field 11"), POS_OK, trl(3)], 2)

# ---------------------------------------------------------------------------
# Objects that are not regular files.

for special, what in [
    ("directory", "A folder named like a batch file."),
    ("fifo", "A named pipe named like a batch file (reading it would block)."),
    ("dangling_link", "A symbolic link named like a batch file whose target is missing."),
]:
    case(f"not-a-file-{special.replace('_', '-')}", what, "not_a_file", special=special)


# ---------------------------------------------------------------------------

def toml_str(s):
    # A JSON string is a valid TOML basic string (no DEL characters used here).
    assert "\x7f" not in s
    return json.dumps(s, ensure_ascii=False)


def toml_value(v):
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join("{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in e.items()) + " }"
                               for e in v) + "]"
    raise TypeError(v)


def main():
    if FILES.exists():
        shutil.rmtree(FILES)
    FILES.mkdir(parents=True)
    for name, content in WRITTEN.items():
        assert len(content) < 2 * MIB, name
        (FILES / name).write_bytes(content)
    out = [
        "# The bad-input corpus: one case per object delivered alone into a fresh inbox.",
        "# GENERATED by make_corpus.py together with files/; edit the script, not this table.",
        "# Read by tests/bad_inputs.rs. Fields: see testdata/bad/README.md.",
        "",
    ]
    for c in CASES:
        out.append("[[case]]")
        for key in ["id", "what", "name", "file", "special", "expect", "reason", "applied", "rejects"]:
            if key in c:
                out.append(f"{key} = {toml_value(c[key])}")
        out.append("")
    (HERE / "cases.toml").write_text("\n".join(out), encoding="utf-8")
    counts = {}
    for c in CASES:
        counts[c["expect"]] = counts.get(c["expect"], 0) + 1
    print(len(CASES), "cases", counts, len(WRITTEN), "files")


main()
