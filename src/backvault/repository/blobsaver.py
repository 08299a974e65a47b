"""Saving blobs in parallel: hash, deduplicate, compress, seal, pack, upload.

The walker hands each chunk to :meth:`BlobSaver.save` and gets a future of its blob id.
Worker threads do the expensive steps (BLAKE3, zstd and AES-GCM all release the GIL).
There are more workers than cores: between those steps each worker needs the GIL for a
moment, and a spare worker keeps the cores busy meanwhile. Sealing and appending to the
open pack happen under one lock, because a blob's nonce is its offset in the pack.

A full pack is uploaded outside the lock and then indexed. Every ``INDEX_FLUSH_PACKS``
packs a new index file is written, so a crash loses at most that many packs from the
index, and even those are recovered from their headers by
:meth:`Repository.reconcile_index`.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import blake3
import zstandard

from backvault.repository.format import object_id
from backvault.repository.index import IndexedPack
from backvault.repository.pack import BlobType, Compression, PackWriter
from backvault.repository.repository import Repository

INDEX_FLUSH_PACKS = 32
# On 2 cores and the 1.2 GB benchmark data set (bench/run.py), a first backup took 11.5 s
# with 2 workers, 10.9 s with 3, 9.4 to 9.9 s with 4 and 9.7 s with 6.
DEFAULT_WORKERS = 4
# Blobs below this size are saved by the calling thread (see BlobSaver._save_inline).
INLINE_BLOB_SIZE = 16 * 1024  # bytes
UPLOADS_IN_FLIGHT = 2  # packs of 16 MiB each, so at most 32 MiB of finished packs held
# Keep compression only when it saves at least this fraction: already-compressed data is
# stored raw, so restoring it costs no decompression.
MIN_COMPRESSION_SAVING = 0.03


@dataclass
class SaverStatistics:
    blobs_new: int = 0
    blobs_known: int = 0
    bytes_new_raw: int = 0
    bytes_stored: int = 0
    packs_written: int = 0


class BlobSaver:
    def __init__(self, repository: Repository, *, workers: int = DEFAULT_WORKERS) -> None:
        self._repository = repository
        self._chunk_id_key = repository.subkeys.chunk_id
        self._data_key = repository.subkeys.data
        self._pack_size = repository.config.pack_size
        self._level = repository.config.compression_level
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blob-saver")

        # Full packs are uploaded by their own threads, so compression goes on while a
        # pack travels to a slow backend. At most UPLOADS_IN_FLIGHT packs wait or travel;
        # a worker that fills one more blocks until one is stored.
        self._uploader = ThreadPoolExecutor(
            max_workers=UPLOADS_IN_FLIGHT, thread_name_prefix="pack-upload"
        )
        self._uploads_in_flight = threading.BoundedSemaphore(UPLOADS_IN_FLIGHT)
        self._uploads: list[Future[None]] = []

        # Bounds the chunks held in memory, those queued plus those being processed: one
        # being compressed by each worker and one waiting for each.
        self._in_flight = threading.BoundedSemaphore(workers * 2)
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        # Trees and data go to separate packs, so that reading every tree of a snapshot
        # (a backup's parent, ls, check) reads a few tree packs whole, not every data pack.
        self._packs: dict[BlobType, PackWriter] = {}
        self._unindexed: list[IndexedPack] = []
        self._local = threading.local()
        self.statistics = SaverStatistics()

    def save(self, blob_type: BlobType, plaintext: bytes) -> Future[bytes]:
        if len(plaintext) < INLINE_BLOB_SIZE:
            return self._save_inline(blob_type, plaintext)
        self._in_flight.acquire()
        future = self._pool.submit(self._save_blob, blob_type, plaintext)
        future.add_done_callback(lambda _: self._in_flight.release())
        return future

    def _save_inline(self, blob_type: BlobType, plaintext: bytes) -> Future[bytes]:
        """Save a small blob in the calling thread.

        Handing a blob of a few kilobytes to a worker costs more interpreter time than
        hashing and compressing it, and the interpreter, not the cores, limits a backup
        of many small files.
        """
        done: Future[bytes] = Future()
        try:
            done.set_result(self._save_blob(blob_type, plaintext))
        except BaseException as error:
            done.set_exception(error)
        return done

    def save_if_new(self, blob_type: BlobType, plaintext: bytes) -> Future[bytes]:
        """Like :meth:`save`, but return at once, without a worker, for a known blob.

        Meant for tree blobs: small, and on a backup with few changes nearly all known.
        """
        blob_id = blake3.blake3(plaintext, key=self._chunk_id_key).digest()
        with self._lock:
            known = blob_id in self._pending or blob_id in self._repository.index
            if known:
                self.statistics.blobs_known += 1
        if not known:
            return self.save(blob_type, plaintext)
        done: Future[bytes] = Future()
        done.set_result(blob_id)
        return done

    def flush(self) -> None:
        """Upload the open pack and write the index of every pack not yet indexed."""
        self._wait_for_uploads()
        with self._lock:
            packs, self._packs = list(self._packs.values()), {}
        for pack in packs:
            if pack.entries:
                self._upload(pack)
        with self._lock:
            unindexed, self._unindexed = self._unindexed, []
        if unindexed:
            self._repository.write_index_file(unindexed)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        try:
            self.flush()
        finally:
            self._uploader.shutdown(wait=True)

    def _save_blob(self, blob_type: BlobType, plaintext: bytes) -> bytes:
        blob_id = blake3.blake3(plaintext, key=self._chunk_id_key).digest()
        with self._lock:
            if blob_id in self._pending or blob_id in self._repository.index:
                self.statistics.blobs_known += 1
                return blob_id
            self._pending.add(blob_id)

        payload, compression = self._compress(plaintext)
        full_pack = self._append(blob_type, blob_id, payload, compression, len(plaintext))
        if full_pack is not None:
            self._start_upload(full_pack)
        return blob_id

    def _start_upload(self, pack: PackWriter) -> None:
        self._raise_failed_upload()
        self._uploads_in_flight.acquire()
        upload = self._uploader.submit(self._upload, pack)
        upload.add_done_callback(lambda _: self._uploads_in_flight.release())
        with self._lock:
            self._uploads.append(upload)

    def _raise_failed_upload(self) -> None:
        """Re-raise the error of a finished upload, so a backup stops at the first one."""
        with self._lock:
            finished = [upload for upload in self._uploads if upload.done()]
            self._uploads = [upload for upload in self._uploads if not upload.done()]
        for upload in finished:
            upload.result()

    def _wait_for_uploads(self) -> None:
        with self._lock:
            uploads, self._uploads = self._uploads, []
        for upload in uploads:
            upload.result()

    def _compress(self, plaintext: bytes) -> tuple[bytes, Compression]:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
            self._local.compressor = compressor
        compressed: bytes = compressor.compress(plaintext)
        if len(compressed) <= len(plaintext) * (1 - MIN_COMPRESSION_SAVING):
            return compressed, Compression.ZSTD
        return plaintext, Compression.NONE

    def _append(
        self, blob_type: BlobType, blob_id: bytes, payload: bytes, compression: Compression,
        raw_length: int,
    ) -> PackWriter | None:
        with self._lock:
            pack = self._packs.get(blob_type)
            if pack is None:
                pack = self._packs[blob_type] = PackWriter(self._data_key)
            pack.add(blob_type, blob_id, payload, compression, raw_length)
            self.statistics.blobs_new += 1
            self.statistics.bytes_new_raw += raw_length
            if pack.size < self._pack_size:
                return None
            del self._packs[blob_type]
            return pack

    def _upload(self, pack: PackWriter) -> None:
        data = pack.finish()
        pack_id = object_id(data)
        self._repository.backend.write("data", pack_id, data)
        indexed = IndexedPack(pack_id, pack.salt, pack.entries)

        with self._lock:
            self._repository.index.add_pack(indexed)
            self._pending.difference_update(entry.blob_id for entry in pack.entries)
            self._unindexed.append(indexed)
            self.statistics.packs_written += 1
            self.statistics.bytes_stored += len(data)
            if len(self._unindexed) < INDEX_FLUSH_PACKS:
                return
            unindexed, self._unindexed = self._unindexed, []
        self._repository.write_index_file(unindexed)
