-- PacBook OLTP source ("Gravity Bookstore" design): 15 tables in schema public.
-- Column names, types, constraint names and sequences follow the real dump.
-- The file has two sections. source_generator.py runs the tables section, loads the rows with COPY,
-- and only then runs the constraints section: building keys once after the load is much faster
-- than checking every row on the way in, and the whole thing is one transaction anyway.

-- section: tables

create table country (
    country_id integer not null,
    country_name varchar(200)
);

create table address_status (
    status_id integer not null,
    address_status varchar(30)
);

create table book_language (
    language_id integer not null,
    language_code varchar(8),
    language_name varchar(50)
);

create table order_status (
    status_id integer not null,
    status_value varchar(20)
);

create table shipping_method (
    method_id integer not null,
    method_name varchar(100),
    cost numeric(6, 2)
);

create table publisher (
    publisher_id integer not null,
    publisher_name varchar(400)
);

create table author (
    author_id integer not null,
    author_name varchar(400)
);

create table book (
    book_id integer not null,
    title varchar(400),
    isbn13 varchar(13),
    language_id integer,
    num_pages integer,
    publication_date date,
    publisher_id integer
);

create table book_author (
    book_id integer not null,
    author_id integer not null
);

create table address (
    address_id integer not null,
    street_number varchar(10),
    street_name varchar(200),
    city varchar(100),
    country_id integer
);

create table customer (
    customer_id integer not null,
    first_name varchar(200),
    last_name varchar(200),
    email varchar(350)
);

create table customer_address (
    customer_id integer not null,
    address_id integer not null,
    status_id integer
);

create sequence cust_order_order_id_seq as integer;

create table cust_order (
    order_id integer not null default nextval('cust_order_order_id_seq'),
    order_date timestamp without time zone,
    customer_id integer,
    shipping_method_id integer,
    dest_address_id integer
);

alter sequence cust_order_order_id_seq owned by cust_order.order_id;

create sequence order_line_line_id_seq as integer;

create table order_line (
    line_id integer not null default nextval('order_line_line_id_seq'),
    order_id integer,
    book_id integer,
    price numeric(5, 2)
);

alter sequence order_line_line_id_seq owned by order_line.line_id;

create sequence order_history_history_id_seq as integer;

create table order_history (
    history_id integer not null default nextval('order_history_history_id_seq'),
    order_id integer,
    status_id integer,
    status_date timestamp without time zone
);

alter sequence order_history_history_id_seq owned by order_history.history_id;

-- section: constraints

alter table country add constraint pk_country primary key (country_id);
alter table address_status add constraint pk_addr_status primary key (status_id);
alter table book_language add constraint pk_language primary key (language_id);
alter table order_status add constraint pk_orderstatus primary key (status_id);
alter table shipping_method add constraint pk_shipmethod primary key (method_id);
alter table publisher add constraint pk_publisher primary key (publisher_id);
alter table author add constraint pk_author primary key (author_id);
alter table book add constraint pk_book primary key (book_id);
alter table book_author add constraint pk_bookauthor primary key (book_id, author_id);
alter table address add constraint pk_address primary key (address_id);
alter table customer add constraint pk_customer primary key (customer_id);
alter table customer_address add constraint pk_custaddr primary key (customer_id, address_id);
alter table cust_order add constraint pk_custorder primary key (order_id);
alter table order_line add constraint pk_orderline primary key (line_id);
alter table order_history add constraint pk_orderhist primary key (history_id);

alter table address add constraint fk_addr_ctry foreign key (country_id) references country (country_id);
alter table book add constraint fk_book_lang foreign key (language_id) references book_language (language_id);
alter table book add constraint fk_book_pub foreign key (publisher_id) references publisher (publisher_id);
alter table book_author add constraint fk_ba_book foreign key (book_id) references book (book_id);
alter table book_author add constraint fk_ba_author foreign key (author_id) references author (author_id);
alter table customer_address add constraint fk_ca_cust foreign key (customer_id) references customer (customer_id);
alter table customer_address add constraint fk_ca_addr foreign key (address_id) references address (address_id);
alter table customer_address add constraint fkey_status_add
    foreign key (status_id) references address_status (status_id);
alter table cust_order add constraint fk_order_cust foreign key (customer_id) references customer (customer_id);
alter table cust_order add constraint fk_order_ship
    foreign key (shipping_method_id) references shipping_method (method_id);
alter table cust_order add constraint fk_order_addr foreign key (dest_address_id) references address (address_id);
alter table order_line add constraint fk_ol_order foreign key (order_id) references cust_order (order_id);
alter table order_line add constraint fk_ol_book foreign key (book_id) references book (book_id);
alter table order_history add constraint fk_oh_order foreign key (order_id) references cust_order (order_id);
alter table order_history add constraint fk_oh_status foreign key (status_id) references order_status (status_id);
