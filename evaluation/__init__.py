"""Scoring Storywire on labelled streams (shared/eval/README.md): reading a stream,
its variants, replaying it through the engine or the API, and the scores. Not the
engine: nothing in storyengine/, service/ or workers/ imports it."""
