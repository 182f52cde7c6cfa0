"""Uploads to the web demo: taken as files and read by the project's own reader, never decoded by Gradio first.

Gradio's `gr.Image` opens every upload with Pillow before the app sees it (even with `type="filepath"`), so a bad
file failed with Pillow's message naming the server's temporary copy, and bypassed the reader's checks (the memory
limit read from the header before decoding). `photo_input` is the same picture input on the page, but hands the
app an `Upload`: the stored file's path and the name the user's file had. `UploadedPhotos` reads it once through
`analysis.photos.read_photo` (by the `PhotoReader`), naming it by that original name, and deletes Gradio's
temporary copy at once; its bytes are kept for the last few uploads only, so that the same upload can be analysed
again with other regions ticked.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..output_folder import file_fingerprint

RECENT_UPLOADS = 4
"""Uploads whose bytes are kept in memory after their file is deleted (each at most the demo's upload limit)."""


@dataclass(frozen=True)
class Upload:
    """A picture sent to the page.

    Attributes:
        path: where Gradio stored it.
        name: the file's name on the user's machine (what messages say).
        temporary: the file is Gradio's copy of an upload (deleted once read), not one of the app's own photos.
    """

    path: str
    name: str
    temporary: bool


def photo_input(own_photos: Iterable[str | os.PathLike] = (), **kwargs) -> gr.Image:
    """A `gr.Image` on the page (preview, upload, clipboard) whose value for the app is an `Upload`, not a decoded
    picture: the file is not opened by Gradio.

    Its `preprocess` is replaced on the instance (a subclass would make Gradio write a `.pyi` stub next to this file).

    Args:
        own_photos: the app's own photos (its examples): Gradio's cached copies of them are never deleted.
        kwargs: `gr.Image`'s.
    """
    image = gr.Image(type="filepath", **kwargs)
    own = {_identity(path) for path in own_photos} - {None}

    def preprocess(payload) -> Upload | None:
        if payload is None:
            return None
        if payload.path is None:
            raise gr.Error("The upload arrived without its file; upload the photo again.")
        path = Path(payload.path)
        in_cache = path.resolve().is_relative_to(Path(image.GRADIO_CACHE).resolve())
        return Upload(str(path), Path(payload.orig_name or path.name).name, temporary=in_cache and _identity(path) not in own)

    image.preprocess = preprocess
    return image


def _identity(path: str | os.PathLike) -> tuple | None:
    fingerprint = file_fingerprint(path)
    return None if fingerprint is None else (fingerprint["size"], fingerprint["sha256"])


class UploadedPhotos:
    """Reads uploads with a `PhotoReader`, deleting Gradio's temporary copy once read (module docstring)."""

    def __init__(self, reader, keep: int = RECENT_UPLOADS):
        self.reader = reader
        self.keep = keep
        self._recent: OrderedDict[str, bytes] = OrderedDict()

    def read(self, upload: Upload | str):
        """The `Photo` (faces found) of an upload, or of a photo path the app gave itself.

        Raises:
            ImageReadError: it is not a picture that can be analysed; the message names its original name.
            gr.Error: a temporary upload that is gone and no longer remembered.
        """
        if isinstance(upload, str):
            return self.reader(upload, name=Path(upload).name)
        if not upload.temporary:
            return self.reader(upload.path, name=upload.name)
        return self.reader(self._take(upload), name=upload.name)

    def _take(self, upload: Upload) -> bytes:
        """The upload's bytes: read from Gradio's copy, which is then deleted, or remembered from an earlier read."""
        path = Path(upload.path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if upload.path in self._recent:
                self._recent.move_to_end(upload.path)
                return self._recent[upload.path]
            raise gr.Error(f"{upload.name}: the upload is no longer on the server; upload the photo again.") from None
        except OSError as error:
            raise gr.Error(f"{upload.name}: the upload cannot be read ({error.strerror}); upload it again.") from None
        finally:
            _remove(path)
        self._recent[upload.path] = data
        while len(self._recent) > self.keep:
            self._recent.popitem(last=False)
        return data


def _remove(path: Path) -> None:
    """Deletes Gradio's copy of an upload and the folder Gradio made for it, once empty."""
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty: Gradio keeps other files there
        pass


__all__ = ["RECENT_UPLOADS", "Upload", "UploadedPhotos", "photo_input"]
