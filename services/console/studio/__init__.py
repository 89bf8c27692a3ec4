"""The studio (issue #32): template versions, previews, recorded payloads and shadow renders.

`versions.py` versions by content hash and promotion; `masking.py` masked fields;
`payloads.py` the recorded payloads (recorded by services/renderer/recording.py);
`preview.py` renders in capped render processes; `shadow.py` shadow renders and their diffs;
`imagediff.py` page images compared. The JSON API is services/console/web/studio_api.py.
"""
