//! The schema part of store `type: memory` for `zilla schema`: it takes no
//! options.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, Family, SchemaPart};

register_schema!(SchemaPart {
    family: Family::Store,
    type_name: "memory",
    part: schema::no_options,
});
