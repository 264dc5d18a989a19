-- The room's default listening profile for WHEP listeners who do not choose
-- one (`?profile=`): 'standard' (32 kb/s, 20 ms) or 'low' (16 kb/s + FEC,
-- 60 ms) for rooms whose audience is mostly on 3G.
ALTER TABLE rooms ADD COLUMN profile TEXT NOT NULL DEFAULT 'standard'
    CHECK (profile IN ('standard', 'low'));
