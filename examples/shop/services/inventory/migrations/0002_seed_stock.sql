-- The stock a fresh shop starts with (again after `switchyard reset`).
INSERT INTO stock (sku, available, price_cents, low_threshold, restock_qty) VALUES
    ('widget',   25,   250, 5, 50),
    ('gadget',    5,  4000, 3, 10),
    ('gizmo',     2, 12000, 1,  5),
    ('doohickey', 8, 75000, 2,  4);
