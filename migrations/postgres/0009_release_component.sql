-- What a release is about: the application or the stage-1 bootloader (issue 18; twin:
-- migrations/sqlite/0009_release_component.sql). A bootloader's versions are a series of their
-- own, so a model's release is unique by (model, component, version): bootloader 1.1.0 and
-- application 1.1.0 may both exist.
ALTER TABLE releases ADD COLUMN component TEXT NOT NULL DEFAULT 'application'
    CHECK (component IN ('application', 'bootloader'));
ALTER TABLE releases DROP CONSTRAINT releases_model_version_key;
ALTER TABLE releases ADD CONSTRAINT releases_model_component_version_key
    UNIQUE (model, component, version);
